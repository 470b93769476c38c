// greet.wasm: an HTTP function (CGI over WASI). Answers
// "<GREETING>, <who>!" where GREETING comes from the workload's environment
// (default "hello") and who from the query string (?who=ana; default
// "world"). Its health path, PATH_INFO /healthz, answers "ok", or 503 when
// HEALTH=fail; with HEALTH=crash every request aborts (a crashing
// revision); with FAIL set, every other request answers 500 (a revision
// that passes its health check but fails its work).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
	const char *health = getenv("HEALTH");
	if (health != NULL && strcmp(health, "crash") == 0) {
		abort();
	}
	const char *path = getenv("PATH_INFO");
	if (path != NULL && strcmp(path, "/healthz") == 0) {
		if (health != NULL && strcmp(health, "fail") == 0) {
			printf("Status: 503 Service Unavailable\nContent-Type: text/plain\n\nnot ready: HEALTH=fail\n");
		} else {
			printf("Content-Type: text/plain\n\nok\n");
		}
		return 0;
	}
	const char *fail = getenv("FAIL");
	if (fail != NULL && *fail != '\0') {
		printf("Status: 500 Internal Server Error\nContent-Type: text/plain\n\nfailing: FAIL=%s\n", fail);
		return 0;
	}
	const char *greeting = getenv("GREETING");
	if (greeting == NULL || *greeting == '\0') {
		greeting = "hello";
	}
	char who[128] = "world";
	const char *q = getenv("QUERY_STRING");
	for (const char *p = q; p != NULL && *p != '\0';) {
		const char *end = strchr(p, '&');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n > 4 && strncmp(p, "who=", 4) == 0) {
			size_t len = n - 4 < sizeof who - 1 ? n - 4 : sizeof who - 1;
			memcpy(who, p + 4, len);
			who[len] = '\0';
		}
		p = end ? end + 1 : NULL;
	}
	printf("Content-Type: text/plain; charset=utf-8\n\n%s, %s!\n", greeting, who);
	return 0;
}
