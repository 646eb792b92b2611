"""Models as evaluation and training both use them: local model folders, loading one, a chat endpoint.

Evaluation scores with the models training makes, and training (the DPRM data) asks the same endpoints
evaluation does; neither may import the other, so what both need lives here, below both of them.
"""
