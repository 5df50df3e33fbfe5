// Command goproxy is the baseline for the knpy queue-proxy benchmark: Go's
// net/http/httputil.ReverseProxy, the engine inside Knative's queue-proxy, with
// nothing else around it (no breaker, no stats, no probes).
//
//	goproxy -listen 127.0.0.1:8012 -upstream http://127.0.0.1:8080
package main

import (
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8012", "address to serve on")
	upstream := flag.String("upstream", "http://127.0.0.1:8080", "URL of the app")
	flag.Parse()

	target, err := url.Parse(*upstream)
	if err != nil {
		log.Fatalf("bad -upstream: %v", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Keep one idle upstream connection per client connection (64 in the benchmark),
	// as Knative's queue-proxy does; the default of 2 would reconnect on most requests.
	transport.MaxIdleConns = 256
	transport.MaxIdleConnsPerHost = 256
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = transport
	log.Fatal(http.ListenAndServe(*listen, proxy))
}
