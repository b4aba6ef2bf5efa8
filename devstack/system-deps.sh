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
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (needed to run Apache Kafka locally)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "learnstream needs: ${missing[*]} (a Java 17+ runtime and Maven run the local Kafka)." >&2
echo "Install them with your package manager, then run the command again." >&2
exit 1
