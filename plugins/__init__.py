"""tlc's built-in backbones and heads, registered through the public plugin hooks."""
