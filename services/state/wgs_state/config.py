"""State service settings."""

from wgs_kit.service_settings import DatabaseAndNats as Settings

__all__ = ["Settings"]
