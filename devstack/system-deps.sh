#!/usr/bin/env bash
# The local Kafka broker needs a Java 17+ runtime and Maven (to fetch the broker jars
# from Maven Central). Install them from the system's packages when we can; otherwise
# say exactly what is missing.
set -euo pipefail

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local major
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [ -n "$major" ] && [ "$major" -ge 17 ]
}

missing=()
java_ok || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# the dashboard and the browser SDK are built with npm; their tests run in headless
# Chromium (Debian's: tests/test_browser_sdk.py drives /usr/bin/chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (needed to run Apache Kafka locally and test the dashboard)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "learnstream needs: ${missing[*]} (Java 17+ and Maven run the local Kafka; chromium runs the browser tests)." >&2
echo "Install them with your package manager, then run the command again." >&2
exit 1
