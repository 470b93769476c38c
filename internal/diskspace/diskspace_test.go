package diskspace

import "testing"

func TestOfReadsTheFilesystem(t *testing.T) {
	s, err := Of(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if s.Size <= 0 || s.Free < 0 || s.Free > s.Size {
		t.Fatalf("Of = %+v, want 0 <= Free <= Size and Size > 0", s)
	}
	if _, err := Of(t.TempDir() + "/missing"); err == nil {
		t.Fatal("Of of a missing directory: want an error")
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:                 "0 B",
		1023:              "1023 B",
		1024:              "1 KiB",
		1536:              "1.5 KiB",
		512 << 20:         "512 MiB",
		3 << 30:           "3 GiB",
		(3 << 30) + 1<<29: "3.5 GiB",
		150 << 30:         "150 GiB",
		4<<30 - 1:         "4 GiB",
	} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
