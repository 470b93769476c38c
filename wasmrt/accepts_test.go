package wasmrt

import "testing"

// Only modules that import sock_accept can serve as Wasm services: the
// servers do, a CGI function (C or Go) does not.
func TestAcceptsConnections(t *testing.T) {
	for _, tc := range []struct {
		module  string
		want    bool
		wantErr bool
	}{
		{module: "cserver.wasm", want: true},
		{module: "goserver.wasm", want: true},
		{module: "greet.wasm"},
		{module: "gofn.wasm"},
		{module: "ticker.wasm"},
		{module: "badimport.wasm"},
		{module: "garbage.wasm", wantErr: true},
	} {
		got, err := AcceptsConnections(readTestModule(t, tc.module))
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: got %v, %v; want %v (error: %v)", tc.module, got, err, tc.want, tc.wantErr)
		}
	}
}
