package etcdbalance

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseConfig: the balancer's JSON config carries the registry key and
// nothing else; anything else is refused with the value in the message.
func TestParseConfig(t *testing.T) {
	good := map[string]string{
		`null`:                               "",
		`{}`:                                 "",
		`{"client": "etcdbalance-client-x"}`: "etcdbalance-client-x",
		`{"client": "hand-written"}`:         "hand-written",
	}
	for js, want := range good {
		cfg, err := parseConfig(json.RawMessage(js))
		require.NoError(t, err, js)
		assert.Equal(t, want, cfg.Client, js)
	}
	bad := map[string]string{
		`[]`:                                  "cannot unmarshal array",
		`{"client": 1}`:                       "cannot unmarshal number",
		`{"decay": "10s"}`:                    `unknown field "decay"`,
		`{"Client": "x", "policy": "pinned"}`: `unknown field "policy"`,
		`{`:                                   "unexpected EOF",
	}
	for js, want := range bad {
		_, err := parseConfig(json.RawMessage(js))
		require.Error(t, err, js)
		assert.Contains(t, err.Error(), want, js)
		assert.Contains(t, err.Error(), "etcdbalance: config "+js, "the error quotes the config")
	}
}

// TestServiceConfig: what DialOptions hands grpc parses back to its key.
func TestServiceConfig(t *testing.T) {
	for _, id := range []string{"etcdbalance-client-x", `odd "key"\`} {
		var top struct {
			LoadBalancingConfig []map[string]json.RawMessage `json:"loadBalancingConfig"`
		}
		sc := serviceConfig(id)
		require.NoError(t, json.Unmarshal([]byte(sc), &top), sc)
		require.Len(t, top.LoadBalancingConfig, 1, sc)
		cfg, err := parseConfig(top.LoadBalancingConfig[0][Name])
		require.NoError(t, err, sc)
		assert.Equal(t, id, cfg.Client)
	}
}
