module knpy/benchmarks/queueproxy/goproxy

go 1.19
