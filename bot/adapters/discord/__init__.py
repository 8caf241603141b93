"""The Discord adapter: voice notes and slash commands in, embeds out. No audio or model code lives here;
it calls ``sera.pipeline.Pipeline`` and renders with the ``embed`` and ``chart`` reporters."""
