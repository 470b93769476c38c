package membership

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// etcdLogger is the embedded etcd's logger. It writes nothing: etcd's
// logs are about internals that wasmorch manages, and the failures that
// matter reach the member through StartEtcd and Err(). What it cannot
// continue after (its Fatal and Panic: a write to a full disk, a corrupt
// file) would end the process with a JSON entry and a stack trace of
// etcd's code; instead the process ends with one line that says what
// failed and what to do, as every other failure of the CLI does.
func etcdLogger(dataDir string) *zap.Logger {
	stop := etcdStop{dataDir: dataDir, out: os.Stderr, exit: os.Exit}
	return zap.New(zapcore.NewNopCore(), zap.WithFatalHook(stop), zap.WithPanicHook(stop))
}

// etcdStop ends the process on etcd's Fatal or Panic.
type etcdStop struct {
	dataDir string
	out     io.Writer
	exit    func(code int) // must not return
}

// OnWrite implements zapcore.CheckWriteHook.
func (s etcdStop) OnWrite(ce *zapcore.CheckedEntry, fields []zapcore.Field) {
	_, _ = fmt.Fprintln(s.out, "error: "+s.line(ce.Message, fields))
	s.exit(1)
}

// line is what etcd's entry says, on one line, with what to do.
func (s etcdStop) line(msg string, fields []zapcore.Field) string {
	var cause error
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && f.Type == zapcore.ErrorType {
			cause = err
			break
		}
	}
	what := "the embedded etcd stopped: " + msg
	if cause != nil {
		what += ": " + cause.Error()
	}
	what = strings.Join(strings.Fields(what), " ")
	if errors.Is(cause, syscall.ENOSPC) || strings.Contains(what, syscall.ENOSPC.Error()) {
		return fmt.Sprintf("%s; the disk holding %s is full: free space on it, then start again (instances and workloads are kept in %s)", what, s.dataDir, Dir(s.dataDir))
	}
	return fmt.Sprintf("%s; its data is in %s: check that disk, then start again", what, Dir(s.dataDir))
}
