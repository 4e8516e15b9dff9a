"""wgs_node_agent."""
