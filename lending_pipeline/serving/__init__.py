"""The scoring service: request models, authentication, the BentoML service, packaging and
deploys."""
