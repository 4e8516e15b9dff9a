"""REST API: tenants, API keys, nodes, instances; publishes commands, follows status events."""
