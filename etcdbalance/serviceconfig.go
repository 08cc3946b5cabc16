package etcdbalance

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/serviceconfig"
)

// lbConfig is the balancer's JSON configuration, the object under the
// "etcdbalance" key of a service config's loadBalancingConfig:
//
//	{"loadBalancingConfig": [{"etcdbalance": {"client": "etcdbalance-client-1"}}]}
//
// It carries only the registry key that New and DialOptions mint: the
// engine's configuration (picker.Config) and the routing rules travel with
// the registered entry, which the JSON could not carry anyway (Clock,
// Rand). A config without a key, or with a key no longer registered, gives
// the balancer an engine of its own with picker's defaults and no cluster
// view, which does not survive a rebuild of the balancer (grpc's idle
// mode). Unknown fields are rejected, so that a misspelt field is not
// silently ignored.
type lbConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	Client string `json:"client"`
}

// parseConfig parses the balancer's JSON configuration. JSON null and {}
// are the defaults. A key that DialOptions minted for invalid options
// gives their error, so that dialling fails with it.
func parseConfig(js json.RawMessage) (*lbConfig, error) {
	cfg := &lbConfig{}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("etcdbalance: config %s: %v (want {\"client\": \"key\"} or {})", js, err)
	}
	if err := reg.rejection(cfg.Client); err != nil {
		return nil, err
	}
	return cfg, nil
}

// serviceConfig is the whole service config that puts a channel on this
// balancer with the engine registered under client.
func serviceConfig(client string) string {
	key, _ := json.Marshal(client) // a string always encodes
	return `{"loadBalancingConfig":[{"` + Name + `":{"client":` + string(key) + `}}]}`
}
