"""Discovery: the capability model, its codecs, and the sources that find declarations."""
