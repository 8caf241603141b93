"""sera's built-in plugins. They use only ``bot.plugin``'s public API, exactly as third-party plugins do."""
