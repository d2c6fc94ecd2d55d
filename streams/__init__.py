"""Topics, settings, the Faust app factory, the publisher SDK and the embedded broker."""
