"""One router per resource: images, models, health (+ metrics)."""
