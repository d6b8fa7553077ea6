"""The HTTP surface: the API and the live dashboard, for platform and coordination."""
