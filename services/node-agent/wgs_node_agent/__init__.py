"""Node agent: runs the instances placed on this node in containers and reports on them."""
