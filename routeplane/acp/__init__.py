"""The ACP pipeline: relay Agent Client Protocol sessions to configured coding agents, and their cards."""
