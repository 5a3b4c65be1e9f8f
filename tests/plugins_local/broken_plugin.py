"""A deliberately broken plugin: importing it raises, as a buggy third-party plugin might."""
raise RuntimeError("this plugin is broken on purpose")
