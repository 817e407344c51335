"""Adapters that run plugins written for other gateways' plugin styles on routeplane's hooks."""
