//go:build linux

package wasmrt

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// listen opens a loopback listener as the worker does for a service,
// and returns it as the file a spec carries and the address to dial.
func listen(t testing.TB) (*os.File, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	t.Cleanup(func() { _ = f.Close() })
	return f, addr
}

// startService starts module as a service on a new listener and waits
// until it accepts.
func startService(t testing.TB, r *Runtime, module string, spec runtimeapi.InstanceSpec) (runtimeapi.Instance, string, *output) {
	t.Helper()
	f, addr := listen(t)
	out := newOutput()
	spec.ID = "svc-" + strings.TrimSuffix(module, ".wasm")
	spec.Artifact = testArtifact(t, module)
	spec.Stdout, spec.Stderr = out, out
	spec.Listeners = []*os.File{f}
	spec.Env = append(spec.Env, "PORT=8080")
	inst, err := r.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopInstance(t, inst) })
	select {
	case <-inst.(*instance).Accepting():
	case <-inst.Done():
		t.Fatalf("%s exited before accepting: %+v; output %q", module, inst.Exit(), out.String())
	case <-time.After(safetyTimeout):
		t.Fatalf("%s did not accept within %v; output %q", module, safetyTimeout, out.String())
	}
	return inst, addr, out
}

func get(t testing.TB, client *http.Client, url string, body string) string {
	t.Helper()
	method := http.MethodGet
	if body != "" {
		method = http.MethodPost
	}
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.Status + " " + string(b)
}

// Wasm services share one runtime, so that goserver.wasm (9 MB) is
// compiled once.
func TestServices(t *testing.T) {
	r := newTestRuntime(t, Config{})
	for _, tc := range []struct {
		name string
		test func(*testing.T, *Runtime)
	}{
		{"answer on their listener", servicesAnswerOnTheirListener},
		{"listener after directories", serviceListenerAfterDirectories},
		{"stop ends a guest waiting on its socket", stopEndsAGuestWaitingOnItsSocket},
		{"accepting only once the guest accepts", acceptingOnlyOnceTheGuestAccepts},
		{"listener must listen", serviceListenerMustListen},
		{"an idle Go server waits in poll_oneoff", idleGoServerWaits},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, r) })
	}
}

// A C server (wasi-libc's accept, read, write) and Go's net/http
// (poll_oneoff on its sockets) answer on the listener the runtime
// preopens, sequentially and concurrently.
func servicesAnswerOnTheirListener(t *testing.T, r *Runtime) {
	for _, tc := range []struct{ module, want string }{
		{"cserver.wasm", "hello from c"},
		{"goserver.wasm", "hello from go"},
	} {
		t.Run(tc.module, func(t *testing.T) {
			_, addr, out := startService(t, r, tc.module, runtimeapi.InstanceSpec{})
			client := &http.Client{Timeout: safetyTimeout}
			if got, want := get(t, client, "http://"+addr+"/api/x?y=1", ""), "200 OK "+tc.want+": GET /api/x (0 bytes)\n"; got != want {
				t.Errorf("GET: got %q, want %q", got, want)
			}
			body := strings.Repeat("b", 100_000) // more than one read and one poll
			if got, want := get(t, client, "http://"+addr+"/p", body), "200 OK "+tc.want+": POST /p (100000 bytes)\n"; got != want {
				t.Errorf("POST: got %q, want %q", got, want)
			}
			var wg sync.WaitGroup
			errs := make(chan string, 16)
			for n := range 16 {
				wg.Go(func() {
					resp, err := client.Get(fmt.Sprintf("http://%s/c/%d", addr, n))
					if err != nil {
						errs <- err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if want := fmt.Sprintf("%s: GET /c/%d (0 bytes)\n", tc.want, n); string(b) != want {
						errs <- fmt.Sprintf("got %q, want %q", b, want)
					}
				})
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
			out.waitFor(t, "accepting on fd 3 (port 8080)")
		})
	}
}

// The listener comes after the instance's preopened directories, and
// $LISTEN_FD says where; files opened after it do not take its number.
func serviceListenerAfterDirectories(t *testing.T, r *Runtime) {
	_, addr, out := startService(t, r, "cserver.wasm", runtimeapi.InstanceSpec{
		Files: map[string][]byte{"/config/app/a": []byte("1"), "/secrets/s/b": []byte("2")},
	})
	out.waitFor(t, "accepting on fd 5")
	if got := get(t, &http.Client{Timeout: safetyTimeout}, "http://"+addr+"/", ""); !strings.Contains(got, "hello from c: GET /") {
		t.Errorf("got %q", got)
	}
}

// A guest blocked in accept, or in poll_oneoff with nothing to do, is
// ended at once by Stop, and no longer holds its listener.
func stopEndsAGuestWaitingOnItsSocket(t *testing.T, r *Runtime) {
	for _, module := range []string{"cserver.wasm", "goserver.wasm"} {
		t.Run(module, func(t *testing.T) {
			inst, addr, _ := startService(t, r, module, runtimeapi.InstanceSpec{})
			if exit := stopInstance(t, inst); exit.Reason != runtimeapi.ReasonStopped || exit.Code != StopExitCode {
				t.Errorf("exit %+v, want Stopped %d", exit, StopExitCode)
			}
			// The test's own copy of the listener is still open, so the
			// kernel completes a connection, but nothing reads it.
			conn, err := net.DialTimeout("tcp", addr, safetyTimeout)
			if err == nil {
				_ = conn.SetDeadline(time.Now().Add(200 * time.Millisecond))
				_, _ = conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
				if n, err := conn.Read(make([]byte, 10)); err == nil {
					t.Errorf("a stopped service answered %d bytes", n)
				}
				conn.Close()
			}
		})
	}
}

// A guest that never calls sock_accept is never Accepting, however long
// it runs (the worker reports it not ready).
func acceptingOnlyOnceTheGuestAccepts(t *testing.T, r *Runtime) {
	f, _ := listen(t)
	out := newOutput()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
		ID: "never", Artifact: testArtifact(t, "cserver.wasm"), Args: []string{"never"},
		Stdout: out, Stderr: out, Listeners: []*os.File{f},
	})
	if err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "not accepting")
	select {
	case <-inst.(*instance).Accepting():
		t.Error("a guest that never accepts is Accepting")
	default:
	}
	stopInstance(t, inst)
}

// An instance whose listener is not a listening socket does not start.
func serviceListenerMustListen(t *testing.T, r *Runtime) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
		ID: "bad", Artifact: testArtifact(t, "cserver.wasm"), Listeners: []*os.File{f},
	})
	if err != nil {
		t.Fatal(err)
	}
	exit := waitExit(t, inst)
	if exit.Reason != runtimeapi.ReasonStartError || !strings.Contains(exit.Message, "listener 0") {
		t.Errorf("exit %+v, want a StartError naming listener 0", exit)
	}
}

// poll_oneoff on a socket waits until it is readable, or until its clock:
// it reports the fd_read event only once data is there, with the bytes
// available, and a subscription to write at once.
func TestPollOneoffWaitsOnASocket(t *testing.T) {
	g := newPollGuest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inst := &instance{ctx: ctx}
	server, client := tcpPair(t)
	s, err := newSockets(inst, nil, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.files[connFDBase] = &sockFile{fd: dupConn(t, server), nonblock: true}

	// subscriptions: a 20 ms clock (userdata 1), fd_read (2), fd_write (3)
	sub := func(userdata uint64, tag byte, fd uint32, timeout uint64) []byte {
		b := make([]byte, subSize)
		binary.LittleEndian.PutUint64(b[subUserdata:], userdata)
		b[subTag] = tag
		binary.LittleEndian.PutUint32(b[subFD:], fd)
		if tag == 0 {
			binary.LittleEndian.PutUint32(b[16:], 1)
			binary.LittleEndian.PutUint64(b[subTimeout:], timeout)
		}
		return b
	}
	poll := func(subs ...[]byte) map[uint64][]byte {
		mem := g.mod.Memory()
		for k, b := range subs {
			mem.Write(1024+uint32(k*subSize), b)
		}
		stack := []uint64{1024, 2048, uint64(len(subs)), 4000}
		pollOneoff(withGuestSockets(ctx, nil, nil, s), g.mod, stack)
		if stack[0] != 0 {
			t.Fatalf("poll_oneoff: errno %d", stack[0])
		}
		n, _ := mem.ReadUint32Le(4000)
		evs := map[uint64][]byte{}
		for k := range n {
			ev, _ := mem.Read(2048+k*eventSize, eventSize)
			evs[binary.LittleEndian.Uint64(ev)] = append([]byte(nil), ev...)
		}
		return evs
	}

	evs := poll(sub(1, 0, 0, uint64(20*time.Millisecond)), sub(2, eventFdRead, connFDBase, 0))
	if _, ok := evs[2]; ok || evs[1] == nil {
		t.Fatalf("nothing to read: got events %v, want the clock's only", keys(evs))
	}

	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = client.Write([]byte("hello"))
	}()
	evs = poll(sub(2, eventFdRead, connFDBase, 0)) // no clock: waits as long as it takes
	ev := evs[2]
	if ev == nil || ev[eventType] != eventFdRead || binary.LittleEndian.Uint16(ev[eventErrno:]) != 0 {
		t.Fatalf("readable: got events %v", evs)
	}
	if n := binary.LittleEndian.Uint64(ev[eventNbytes:]); n != 5 {
		t.Errorf("readable: nbytes %d, want 5", n)
	}

	evs = poll(sub(1, 0, 0, uint64(time.Hour)), sub(3, eventFdWrite, connFDBase, 0))
	if evs[3] == nil || evs[1] != nil {
		t.Errorf("writable: got events %v, want fd_write's only", keys(evs))
	}

	client.Close()
	evs = poll(sub(2, eventFdRead, connFDBase, 0))
	if ev := evs[2]; ev == nil || binary.LittleEndian.Uint16(ev[eventFlags:])&eventHangup == 0 && binary.LittleEndian.Uint64(ev[eventNbytes:]) != 5 {
		t.Errorf("after the peer closed: got events %v, want fd_read", evs)
	}
}

// A guest waiting in poll_oneoff on its sockets is ended by Stop.
func TestPollOneoffOnASocketEndsAtStop(t *testing.T) {
	g := newPollGuest(t)
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{ctx: ctx}
	server, _ := tcpPair(t)
	s, err := newSockets(inst, nil, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.files[connFDBase] = &sockFile{fd: dupConn(t, server), nonblock: true}
	b := make([]byte, subSize)
	b[subTag] = eventFdRead
	binary.LittleEndian.PutUint32(b[subFD:], connFDBase)
	g.mod.Memory().Write(1024, b)

	ended := make(chan any)
	go func() {
		defer func() { ended <- recover() }()
		pollOneoff(withGuestSockets(ctx, nil, nil, s), g.mod, []uint64{1024, 2048, 1, 4000})
	}()
	select {
	case v := <-ended:
		t.Fatalf("poll_oneoff returned with nothing to read (%v)", v)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	select {
	case v := <-ended:
		if e, ok := v.(*sys.ExitError); !ok || e.ExitCode() != sys.ExitCodeContextCanceled {
			t.Errorf("stopped: poll_oneoff ended with %v, want the guest's exit", v)
		}
	case <-time.After(safetyTimeout):
		t.Fatal("poll_oneoff still waiting after Stop")
	}
}

func keys(m map[uint64][]byte) []uint64 {
	var ks []uint64
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// tcpPair is a connected pair of loopback TCP connections.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

// dupConn is a non-blocking duplicate of c's descriptor, which the socket
// table then owns.
func dupConn(t testing.TB, c net.Conn) int {
	t.Helper()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := dupFD(f)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// An idle Go server waits in poll_oneoff on its listener (its scheduler
// has nothing else to do) rather than spinning, as it does where
// poll_oneoff reports a socket ready at once.
func idleGoServerWaits(t *testing.T, r *Runtime) {
	inst, _, _ := startService(t, r, "goserver.wasm", runtimeapi.InstanceSpec{})
	deadline := time.Now().Add(safetyTimeout)
	for inst.(*instance).sleepingSince.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the idle Go server never waited in poll_oneoff within %v", safetyTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}
