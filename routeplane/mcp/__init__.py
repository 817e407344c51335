"""The MCP pipeline: routeplane as a Model Context Protocol gateway in front of many upstream MCP servers."""
