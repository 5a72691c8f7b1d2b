"""Fixtures for the model-source tests: the moto S3 server."""

from tests.models.s3_server import s3_credentials, s3_endpoint, s3_env

__all__ = ["s3_credentials", "s3_endpoint", "s3_env"]
