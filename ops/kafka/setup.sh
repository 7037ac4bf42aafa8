#!/usr/bin/env bash
# One-shot (docker-compose service kafka-setup), as the admin user over SASL_SSL, on every
# `docker compose up`: sets each SCRAM user's password to the one in .env (so that a
# cluster formatted before a user existed gets it, and a changed password is rotated),
# then adds the ACLs of ops/kafka/acls.conf. Both are idempotent. An ACL removed from the
# file stays until removed by hand: kafka-acls.sh --remove (docs/operations.md).
#
# Every SCRAM_PASSWORD_<USER> variable is a user (SCRAM_PASSWORD_STATUS_PROJECTION is
# status-projection); SCRAM_PASSWORD_ADMIN is the admin's own.
set -euo pipefail

KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
BOOTSTRAP=${BOOTSTRAP:?the brokers, host:port[,host:port]}
CA_FILE=${CA_FILE:-/etc/smsrx/kafka-ca/ca.pem}
ACLS=${ACLS:-$(dirname "$0")/acls.conf}
PREFIX=${SMSRX_TOPIC_PREFIX:-}
config=$(mktemp)
trap 'rm -f "$config"' EXIT
chmod 600 "$config"
cat > "$config" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${SCRAM_PASSWORD_ADMIN:?}";
ssl.truststore.type=PEM
ssl.truststore.location=$CA_FILE
PROPERTIES

while IFS= read -r name; do
  user=${name#SCRAM_PASSWORD_}
  user=${user,,}
  user=${user//_/-}
  "$KAFKA_BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$config" \
    --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=${!name}]" >/dev/null
  echo "kafka-setup: user $user"
done < <(compgen -e | grep '^SCRAM_PASSWORD_' | sort)

count=0
while read -r user operations type name pattern _; do
  [[ -z ${user:-} || $user == \#* ]] && continue
  [[ ${pattern:-} == \#* || -z ${pattern:-} ]] && pattern=literal
  args=()
  IFS=, read -ra ops <<< "$operations"
  for op in "${ops[@]}"; do args+=(--operation "$op"); done
  "$KAFKA_BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$config" \
    --add --allow-principal "User:$user" "${args[@]}" "--$type" "$PREFIX$name" \
    --resource-pattern-type "$pattern" >/dev/null
  count=$((count + 1))
done < "$ACLS"
echo "kafka-setup: $count ACL line(s) of $(basename "$ACLS") applied, topic prefix '${PREFIX}'"
