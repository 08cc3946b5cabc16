package faultproxy

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// frame builds an HTTP/2 frame with a zero payload of the given length.
func frame(typ, flags byte, id uint32, length int) []byte {
	b := []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, flags,
		byte(id>>24) | 0x80, byte(id >> 16), byte(id >> 8), byte(id)} // reserved bit set: must be ignored
	return append(b, make([]byte, length)...)
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

const (
	typeData         = 0x0
	typeHeaders      = 0x1
	typePriority     = 0x2
	typeSettings     = 0x4
	typeWindowUpdate = 0x8
	typeContinuation = 0x9
)

var h2Stream = concat(
	[]byte(http2Preface),
	frame(typeSettings, 0, 0, 18),
	frame(typeHeaders, 0x4, 1, 40),
	frame(typeData, 0x1, 1, 100),
	frame(typeHeaders, 0x0, 3, 20), // header block continues
	frame(typeContinuation, 0x4, 3, 10),
	frame(typeHeaders, 0x5, 1, 8), // trailers on an old stream: not new
	frame(typePriority, 0, 5, 5),
	frame(typeHeaders, 0x4, 5, 30),
	frame(typeWindowUpdate, 0, 0, 4),
	frame(typeHeaders, 0x4, 7, 70000), // payload spans several reads
	frame(typeData, 0x1, 7, 0),
)

func TestStreamCounter(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want int64
	}{
		{"http2", string(h2Stream), 4},
		{"http1", "GET / HTTP/1.1\r\nHost: a\r\n\r\n" +
			// The 20-byte body looks like a request and must be skipped.
			"POST /v2/keys/a HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\nContent-Type: x\r\n\r\n" +
			"GET / HTTP/1.1\r\n\r\nab" +
			"\r\nPUT /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n" +
			"DELETE /y?wait=true HTTP/1.1\r\nX-Long-Header-Name-Here: 12\r\n\r\n", 4},
		{"chunked body stops counting", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nGET /\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", 1},
		{"h2c upgrade", "GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n" + http2Preface +
			string(frame(typeHeaders, 0x4, 3, 7)), 2},
		{"method starting like the preface", "PRIX / HTTP/1.1\r\n\r\n", 1},
		{"tls", "\x16\x03\x01\x02\x00\x01\x00\x01\xfcGET / HTTP/1.1\r\n", 0},
		{"garbage", "\x00\x01GET / HTTP/1.1\r\n\r\n", 0},
		{"lower-case method", "get / HTTP/1.1\r\n\r\n", 0},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			var whole streamCounter
			if got := whole.feed(in); got != tc.want {
				t.Fatalf("whole: %d, want %d", got, tc.want)
			}
			var bytewise streamCounter
			var got int64
			for i := range in {
				got += bytewise.feed(in[i : i+1])
			}
			if got != tc.want {
				t.Fatalf("byte by byte: %d, want %d", got, tc.want)
			}
			for range 20 {
				var split streamCounter
				got = 0
				for rest := in; len(rest) > 0; {
					k := min(len(rest), 1+rng.IntN(40))
					got += split.feed(rest[:k])
					rest = rest[k:]
				}
				if got != tc.want {
					t.Fatalf("random split: %d, want %d", got, tc.want)
				}
			}
		})
	}
}

func TestStreamCounterAllocs(t *testing.T) {
	h1 := []byte("POST /v2/keys/a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
	var s streamCounter
	allocs := testing.AllocsPerRun(100, func() {
		s = streamCounter{}
		s.feed(h2Stream)
		s = streamCounter{}
		s.feed(h1)
	})
	if allocs != 0 {
		t.Fatalf("feed allocates %.1f times", allocs)
	}
}

func BenchmarkStreamCounterHTTP2(b *testing.B) {
	b.SetBytes(int64(len(h2Stream)))
	for b.Loop() {
		var s streamCounter
		s.feed(h2Stream)
	}
}

func TestStreamsHTTP2Cleartext(t *testing.T) {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = fmt.Fprintf(w, "%s %d", r.Proto, r.ContentLength)
	}))
	srv.Config.Protocols = &protos
	srv.Start()
	defer srv.Close()

	p := newProxy(t, srv.Listener.Addr().String())
	tr := &http.Transport{Protocols: &protos}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + p.Addr() + "/"

	do := func(method string, body io.Reader) {
		req, err := http.NewRequest(method, url, body)
		if err != nil {
			t.Error(err)
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if !strings.HasPrefix(string(b), "HTTP/2.0") {
			t.Errorf("served over %q", b)
		}
	}
	for range 5 {
		do(http.MethodGet, nil)
	}
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() { do(http.MethodPost, strings.NewReader(strings.Repeat("x", 1000*i))) })
	}
	wg.Wait()
	waitFor(t, "11 streams", func() bool { return p.Stats().Streams >= 11 })
	if s := p.Stats(); s.Streams != 11 {
		t.Fatalf("Streams = %d, want 11", s.Streams)
	}
}

func TestStreamsGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	defer func() {
		hs.Shutdown()
		srv.Stop()
		<-served
	}()

	p := newProxy(t, ln.Addr().String())
	cc, err := grpc.NewClient("passthrough:///"+p.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const unary = 6
	for range unary {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	stream, err := hc.Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	stopWatch()

	waitFor(t, "streams counted", func() bool { return p.Stats().Streams >= unary+1 })
	if s := p.Stats(); s.Streams != unary+1 || s.Accepted != 1 {
		t.Fatalf("stats %+v, want %d streams on 1 connection", s, unary+1)
	}
}

func TestStreamsHTTP1(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.Proto)
	}))
	defer srv.Close()
	p := newProxy(t, srv.Listener.Addr().String())
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + p.Addr() + "/v2/keys/foo"

	for i := range 7 {
		var resp *http.Response
		var err error
		if i%2 == 0 {
			resp, err = client.Get(url + "?wait=true")
		} else {
			// Bodies that look like requests must not be counted.
			resp, err = client.Post(url, "text/plain", strings.NewReader("GET / HTTP/1.1\r\n\r\n"))
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(b) != "HTTP/1.1" {
			t.Fatalf("served over %q", b)
		}
	}
	waitFor(t, "requests counted", func() bool { return p.Stats().Streams >= 7 })
	if s := p.Stats(); s.Streams != 7 || s.Accepted != 1 {
		t.Fatalf("stats %+v, want 7 requests on one connection", s)
	}
}

func TestStreamsTLSNotParsed(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	p := newProxy(t, srv.Listener.Addr().String())
	client := srv.Client()
	defer client.CloseIdleConnections()
	for range 3 {
		resp, err := client.Get("https://" + p.Addr() + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	if s := p.Stats(); s.Streams != 0 || s.BytesToServer == 0 {
		t.Fatalf("stats %+v: TLS must pass through uncounted", s)
	}
}
