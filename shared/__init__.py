"""Code every DermaScan service shares: settings, messages, bus, store, registry, images."""
