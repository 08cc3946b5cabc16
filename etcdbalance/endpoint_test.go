package etcdbalance

import "testing"

// TestMemberAddr: every endpoint form clientv3 accepts maps to the address
// its resolver hands grpc (the balancer's name for the member), and those
// addresses map to themselves.
func TestMemberAddr(t *testing.T) {
	cases := map[string]string{
		"10.0.0.1:2379":                "10.0.0.1:2379",
		"http://10.0.0.1:2379":         "10.0.0.1:2379",
		"https://etcd-0.example:2379":  "etcd-0.example:2379",
		"https://etcd-0.example:2379/": "etcd-0.example:2379",
		"etcd-0.example:2379":          "etcd-0.example:2379",
		"unix:///run/etcd.sock":        "unix:///run/etcd.sock",
		"unixs:///run/etcd.sock":       "unix:///run/etcd.sock",
		"unix://etcd.sock":             "unix:etcd.sock",
		"unixs://etcd.sock:0":          "unix:etcd.sock:0",
		"unix:etcd.sock":               "unix:etcd.sock",
		"dns:///etcd.example:2379":     "dns:///etcd.example:2379",
		"":                             "",
	}
	for in, want := range cases {
		got := memberAddr(in)
		if got != want {
			t.Errorf("memberAddr(%q) = %q, want %q", in, got, want)
		}
		if again := memberAddr(got); again != got {
			t.Errorf("memberAddr(%q) = %q, not idempotent", got, again)
		}
	}
}
