"""BentoML service for the registered model."""
