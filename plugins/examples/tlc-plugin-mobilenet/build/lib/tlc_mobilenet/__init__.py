"""tlc plugin: MobileNetV2 backbone and a conv classifier head."""
