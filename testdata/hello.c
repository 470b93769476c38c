// hello.wasm: the smallest useful WASI command, in C with wasi-libc.
// Prints a greeting, then argv[1..] and $GREETING when they are given.
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
	puts("hello from wasmorch");
	if (argc > 1) {
		fputs("args:", stdout);
		for (int i = 1; i < argc; i++) {
			printf(" %s", argv[i]);
		}
		putchar('\n');
	}
	const char *greeting = getenv("GREETING");
	if (greeting != NULL) {
		printf("GREETING=%s\n", greeting);
	}
	return 0;
}
