// cat.wasm: prints each file named in argv[1..] as "<path>: <contents>",
// or "<path>: cannot open" when it cannot; for an argument +PATH it tries
// to write PATH and prints "<path>: written" or "<path>: cannot write".
// Exits 0. Shows the files an instance sees (configs and secrets mounted as
// files) and that they are read-only.
#include <stdio.h>

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '+') {
			FILE *w = fopen(argv[i] + 1, "w");
			printf("%s: %s\n", argv[i] + 1, w == NULL ? "cannot write" : "written");
			if (w != NULL) {
				fclose(w);
			}
			continue;
		}
		FILE *f = fopen(argv[i], "r");
		if (f == NULL) {
			printf("%s: cannot open\n", argv[i]);
			continue;
		}
		printf("%s: ", argv[i]);
		char buf[256];
		size_t n;
		while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
			fwrite(buf, 1, n, stdout);
		}
		putchar('\n');
		fclose(f);
	}
	return 0;
}
