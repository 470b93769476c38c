package ctrrt

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containerd/containerd/v2/client"
)

// edge: an image labelled for the node's platform may hold a binary of
// another: runc's execve then fails with "exec format error", which the
// container prints and exits 1 with, and it was restarted for ever as an
// instance that fails. Before starting the task, the runtime reads the
// ELF header of the program the container would execute, in the
// container's own root (/proc/PID/root of the task's init process, waiting
// to exec), and a program for another machine is this node's failure:
// WrongArchitecture, which the control plane answers by placing the
// instance elsewhere. Programs it cannot read or that are not ELF (a
// script names its interpreter on its first line: that is checked) are
// left to run as before.

// elfMachines are the ELF machines (and classes) of the Go architectures
// a node may have.
var elfMachines = map[string]struct {
	machine elf.Machine
	class   elf.Class
}{
	"amd64":   {elf.EM_X86_64, elf.ELFCLASS64},
	"386":     {elf.EM_386, elf.ELFCLASS32},
	"arm64":   {elf.EM_AARCH64, elf.ELFCLASS64},
	"arm":     {elf.EM_ARM, elf.ELFCLASS32},
	"riscv64": {elf.EM_RISCV, elf.ELFCLASS64},
	"ppc64le": {elf.EM_PPC64, elf.ELFCLASS64},
	"s390x":   {elf.EM_S390, elf.ELFCLASS64},
}

// maxSymlinks bounds the links followed resolving one path, as the kernel
// does (ELOOP).
const maxSymlinks = 40

// foreignEntrypoint reads ctr's process from its spec and checks what it
// would execute in the root of its task's init process pid.
func (r *Runtime) foreignEntrypoint(ctx context.Context, ctr client.Container, pid uint32) string {
	spec, err := ctr.Spec(ctx)
	if err != nil || spec.Process == nil {
		return ""
	}
	return foreignEntrypoint(fmt.Sprintf("/proc/%d/root", pid), spec.Process.Args, spec.Process.Env, spec.Process.Cwd)
}

// foreignEntrypoint says why the program a container would execute cannot
// run on this node ("/app is an ELF executable for aarch64; this node is
// linux/amd64"), or "" when it can or that cannot be told. root is the
// container's root directory as the host sees it; args, env and cwd are
// its process's.
func foreignEntrypoint(root string, args, env []string, cwd string) string {
	if len(args) == 0 {
		return ""
	}
	prog := lookPath(root, args[0], env, cwd)
	if prog == "" {
		return ""
	}
	// A script's interpreter is what runs; it may itself be a script (the
	// kernel allows a few levels).
	for range 4 {
		head, err := readHead(root, prog)
		if err != nil {
			return ""
		}
		interp, ok := shebang(head)
		if !ok {
			if why := foreignELF(head, binfmtHandlers()); why != "" {
				return prog + " " + why
			}
			return ""
		}
		prog = interp
	}
	return ""
}

// lookPath finds the program args[0] names as runc does: a name with a
// slash is a path (relative to the working directory), a bare name is
// looked up in the process's PATH; "" if it is not found.
func lookPath(root, name string, env []string, cwd string) string {
	if strings.Contains(name, "/") {
		if !path.IsAbs(name) {
			name = path.Join("/", cwd, name)
		}
		return name
	}
	dirs := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			dirs = v
		}
	}
	for _, dir := range filepath.SplitList(dirs) {
		if dir == "" || !path.IsAbs(dir) {
			continue
		}
		p := path.Join(dir, name)
		if st, err := os.Stat(inRoot(root, p)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// inRoot resolves p (absolute, in the container) to a path on the host
// under root, following its symbolic links as the container would see
// them: an absolute target starts again at root, ".." stops at root.
func inRoot(root, p string) string {
	resolved := "/"
	rest := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
	for links := 0; len(rest) > 0; {
		part := rest[0]
		rest = rest[1:]
		if part == "" || part == "." {
			continue
		}
		next := path.Join(resolved, part) // ".." stops at "/"
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil { // not a link (or not there): keep it as it is
			resolved = next
			continue
		}
		if links++; links > maxSymlinks {
			return filepath.Join(root, next)
		}
		if path.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, resolved)
}

// readHead reads the first bytes of p in the container.
func readHead(root, p string) ([]byte, error) {
	f, err := os.Open(inRoot(root, p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, 256)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return head[:n], nil
}

// shebang is the interpreter a script's "#!" line names.
func shebang(head []byte) (string, bool) {
	line, ok := bytes.CutPrefix(head, []byte("#!"))
	if !ok {
		return "", false
	}
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	fields := strings.Fields(string(line))
	if len(fields) == 0 || !path.IsAbs(fields[0]) {
		return "", false
	}
	return fields[0], true
}

// foreignELF says what machine an ELF header is for when this node cannot
// execute it ("is an ELF executable for aarch64; this node is
// linux/amd64"): neither natively nor through a binfmt_misc handler (such
// as qemu-user-static registered with the kernel); "" otherwise, or when
// head is not an ELF header.
func foreignELF(head []byte, handlers []binfmtHandler) string {
	if len(head) < 20 || !bytes.HasPrefix(head, []byte(elf.ELFMAG)) {
		return ""
	}
	class := elf.Class(head[elf.EI_CLASS])
	var order binary.ByteOrder
	switch elf.Data(head[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return ""
	}
	machine := elf.Machine(order.Uint16(head[18:20]))
	here, known := elfMachines[runtime.GOARCH]
	if !known || (machine == here.machine && class == here.class) {
		return ""
	}
	for _, h := range handlers {
		if h.matches(head) {
			return ""
		}
	}
	return fmt.Sprintf("is an ELF executable for %s (%s); this node is %s/%s", machineName(machine), class, runtime.GOOS, runtime.GOARCH)
}

// machineName is an ELF machine as people name it: "aarch64", "x86-64".
func machineName(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86-64"
	case elf.EM_AARCH64:
		return "aarch64"
	case elf.EM_ARM:
		return "arm"
	case elf.EM_RISCV:
		return "riscv"
	case elf.EM_386:
		return "i386"
	}
	return strings.ToLower(strings.TrimPrefix(m.String(), "EM_"))
}

// binfmtHandler is an enabled binfmt_misc entry that recognises files by
// their magic bytes.
type binfmtHandler struct {
	offset      int
	magic, mask []byte
}

func (h binfmtHandler) matches(head []byte) bool {
	if h.offset+len(h.magic) > len(head) {
		return false
	}
	for i, m := range h.magic {
		b := head[h.offset+i]
		if i < len(h.mask) {
			b &= h.mask[i]
		}
		if b != m {
			return false
		}
	}
	return true
}

// binfmtMisc is where the kernel lists its binfmt_misc handlers.
var binfmtMisc = "/proc/sys/fs/binfmt_misc"

// binfmtHandlers reads the kernel's enabled binfmt_misc handlers that
// match by magic (an emulator such as qemu-user-static, registered, runs
// another machine's programs); none when binfmt_misc is not mounted.
func binfmtHandlers() []binfmtHandler {
	if status, err := os.ReadFile(filepath.Join(binfmtMisc, "status")); err != nil || strings.TrimSpace(string(status)) != "enabled" {
		return nil
	}
	entries, err := os.ReadDir(binfmtMisc)
	if err != nil {
		return nil
	}
	var handlers []binfmtHandler
	for _, e := range entries {
		if e.Name() == "status" || e.Name() == "register" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(binfmtMisc, e.Name()))
		if err != nil {
			continue
		}
		if h, ok := parseBinfmt(string(b)); ok {
			handlers = append(handlers, h)
		}
	}
	return handlers
}

// parseBinfmt reads one binfmt_misc entry ("enabled\ninterpreter
// ...\noffset 0\nmagic 7f454c46...\nmask ffffff...\n"); only an enabled
// entry that matches by magic is kept.
func parseBinfmt(entry string) (binfmtHandler, bool) {
	var h binfmtHandler
	enabled, magic := false, false
	for _, line := range strings.Split(entry, "\n") {
		key, value, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch key {
		case "enabled":
			enabled = true
		case "offset":
			if _, err := fmt.Sscan(value, &h.offset); err != nil {
				return h, false
			}
		case "magic":
			b, err := hex.DecodeString(value)
			if err != nil {
				return h, false
			}
			h.magic, magic = b, true
		case "mask":
			b, err := hex.DecodeString(value)
			if err != nil {
				return h, false
			}
			h.mask = b
		}
	}
	return h, enabled && magic
}
