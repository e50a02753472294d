"""Thespian actors: the supervisor, the shards, and the conversation actors they host."""
