"""The Kubernetes seam: resources, the informer and client interfaces, and their implementations.

Pure modules (``resources``, ``informer``, ``client``, ``labels``, ``hashing``) import no
asyncio and no component, so both the data plane and the local API server can share them
(tests/shared/test_import_rules.py holds them to it). Over kubernetes-asyncio: ``config`` (where
the API is), ``kubeclient`` (``ApiKubeClient``), ``kubeinformer`` (``KubeInformerFactory``),
``lease`` (leader election); in memory for unit tests: ``fake`` (``FakeCluster``, both a client
and an informer factory).
"""
