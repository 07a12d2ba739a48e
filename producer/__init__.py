"""Mark-price producer: validates ticks and publishes them."""
