"""The Kubernetes seam: resources, the informer and client interfaces, and their implementations.

Pure modules (``resources``, ``informer``, ``client``) import no asyncio and no component, so
both the data plane and the local API server can share them; ``kubeinformer``/``kubeclient``
implement them over kubernetes-asyncio, ``fake`` in memory for unit tests.
"""
