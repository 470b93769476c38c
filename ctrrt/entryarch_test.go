package ctrrt

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestInRootFollowsLinksAsTheContainerSeesThem(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "opt"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/real"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"bin":          "usr/bin",          // relative
		"opt/abs":      "/usr/bin/real",    // absolute: from the container's root
		"opt/up":       "../../../usr/bin", // ".." stops at the root
		"opt/loop":     "/opt/loop",
		"usr/bin/rel2": "real",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	for in, want := range map[string]string{
		"/bin/real":        "usr/bin/real",
		"/opt/abs":         "usr/bin/real",
		"/opt/up/real":     "usr/bin/real",
		"/bin/rel2":        "usr/bin/real",
		"/../../bin/real":  "usr/bin/real",
		"/opt/missing/app": "opt/missing/app",
	} {
		if got := inRoot(root, in); got != filepath.Join(root, want) {
			t.Errorf("inRoot(%s) = %s, want %s", in, got, filepath.Join(root, want))
		}
	}
	if got := inRoot(root, "/opt/loop"); !strings.HasPrefix(got, root) {
		t.Errorf("a link loop resolved outside the root: %s", got)
	}
}

func TestForeignELFHonoursBinfmtHandlers(t *testing.T) {
	otherMachine := byte(0xb7) // EM_AARCH64
	if runtime.GOARCH == "arm64" {
		otherMachine = 0x3e // EM_X86_64
	}
	head := make([]byte, 64)
	copy(head, "\x7fELF\x02\x01\x01")
	head[18] = otherMachine
	if why := foreignELF(head, nil); !strings.Contains(why, "is an ELF executable for") {
		t.Errorf("foreign ELF: %q", why)
	}
	if why := foreignELF([]byte("#!/bin/sh\n"), nil); why != "" {
		t.Errorf("not ELF: %q", why)
	}
	// qemu-user-static's handler as Debian registers it, for aarch64 or x86-64.
	magic, mask := "7f454c460201010000000000000000000200b700", "ffffffffffffff00fffffffffffffffffeffffff"
	if otherMachine == 0x3e {
		magic = "7f454c4602010100000000000000000002003e00"
	}
	h, ok := parseBinfmt("enabled\ninterpreter /usr/libexec/qemu-binfmt/qemu\nflags: POCF\noffset 0\nmagic " + magic + "\nmask " + mask + "\n")
	if !ok {
		t.Fatal("the qemu handler did not parse")
	}
	head[16] = 2 // ET_EXEC
	if why := foreignELF(head, []binfmtHandler{h}); why != "" {
		t.Errorf("a registered emulator runs it, yet: %q", why)
	}
	if _, ok := parseBinfmt("disabled\ninterpreter /x\noffset 0\nmagic " + magic + "\n"); ok {
		t.Error("a disabled handler was kept")
	}
}
