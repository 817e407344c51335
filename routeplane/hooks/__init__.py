"""Hook contracts, one module per pipeline: language_model, mcp, acp."""
