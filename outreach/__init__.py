"""outreach: CityNet's newsletter and outreach mailing system."""

__version__ = "0.3.0"
