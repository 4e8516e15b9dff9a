"""Runtime plumbing shared by every service: settings, logging, NATS, waiting."""
