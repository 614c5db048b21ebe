package main

import (
	"net/url"
	"testing"
)

func TestEgressProxy(t *testing.T) {
	t.Parallel()
	if p := egressProxy(func(string) string { return "" }); p != nil {
		t.Fatal("a proxy function without any proxy variable set")
	}
	env := map[string]string{"https_proxy": "http://egress.internal:3128"}
	p := egressProxy(func(k string) string { return env[k] })
	if p == nil {
		t.Fatal("https_proxy ignored")
	}
	got, err := p(&url.URL{Scheme: "https", Host: "api.openai.com"})
	if err != nil || got == nil || got.Host != "egress.internal:3128" {
		t.Fatalf("https upstream proxied via %v (%v), want egress.internal:3128 from getenv", got, err)
	}
	// net/http never proxies loopback, whatever the environment says.
	if got, err := p(&url.URL{Scheme: "http", Host: "127.0.0.1:9"}); got != nil || err != nil {
		t.Fatalf("loopback upstream proxied via %v (%v)", got, err)
	}
}
