"""The aiohttp application: routes, tokens, peers and DataChannels."""
