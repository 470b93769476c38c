// echo.wasm: an HTTP function (CGI over WASI) that copies the request body
// to the response and reports CGI variables as X-Cgi-* response headers.
// The request header X-Echo-Status, if set, becomes the response's Status.
// It reads the whole body before it writes anything, so that a body over
// the limit fails before the response has begun.
#include <stdio.h>
#include <stdlib.h>

static const char *vars[] = {
	"REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
	"CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT",
	"SERVER_PROTOCOL", "REMOTE_ADDR", "GATEWAY_INTERFACE", "HTTP_HOST",
	"HTTP_X_TEST", "HTTP_USER_AGENT", "X_MATCHED_ROUTE", "GREETING",
};

int main(void) {
	size_t len = 0, cap = 16384;
	char *body = malloc(cap);
	for (size_t n; body != NULL && (n = fread(body + len, 1, cap - len, stdin)) > 0;) {
		len += n;
		if (len == cap) {
			cap *= 2;
			body = realloc(body, cap);
		}
	}
	if (body == NULL) {
		fputs("echo: out of memory\n", stderr);
		return 3;
	}
	if (ferror(stdin)) {
		fputs("echo: reading the body failed\n", stderr);
		return 2;
	}
	const char *status = getenv("HTTP_X_ECHO_STATUS");
	if (status != NULL) {
		printf("Status: %s\n", status);
	}
	const char *ct = getenv("CONTENT_TYPE");
	printf("Content-Type: %s\n", ct != NULL && *ct != '\0' ? ct : "application/octet-stream");
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
		const char *v = getenv(vars[i]);
		if (v != NULL) {
			printf("X-Cgi-%s: %s\n", vars[i], v);
		}
	}
	putchar('\n');
	return fwrite(body, 1, len, stdout) == len ? 0 : 1;
}
