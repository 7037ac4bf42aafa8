#!/usr/bin/env bash
# Starts one Kafka node of docker-compose.yml: formats its storage the first time with the
# SCRAM users (kafka-storage format --add-scram), then hands over to the image's own start
# script, which renders the same server.properties from the KAFKA_* variables and starts.
#
# The image formats storage by itself, but without SCRAM users; a cluster needs at least
# its admin user in the metadata log before any client can authenticate. So this script
# formats first, with the server.properties the image would render, and the image then
# finds the storage "already formatted". Later starts leave the storage alone: users and
# passwords are then kept in step by the kafka-setup job (ops/kafka/setup.sh).
#
# Every SCRAM_PASSWORD_<USER> variable is a user: SCRAM_PASSWORD_STATUS_PROJECTION is
# status-projection. Passwords: letters, digits, '-', '_' and '.' only (.env.example).
# The keystore password is read from the file the kafka-certs job wrote beside it.
set -euo pipefail

STORAGE_TOOL=${STORAGE_TOOL:-/opt/kafka/bin/kafka-storage.sh}
IMAGE_RUN=${IMAGE_RUN:-/etc/kafka/docker/run}
SECRETS=${SECRETS:-/etc/kafka/secrets}
RENDERED=${RENDERED:-/tmp/smsrx-format.properties}

# The image's rule (kafka.docker.KafkaDockerWrapper): KAFKA_FOO_BAR=1 is foo.bar=1; '___'
# stands for '-' and '__' for '_'. These variables are not properties:
not_properties=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS KAFKA_OPTS KAFKA_JMX_OPTS \
KAFKA_JVM_PERFORMANCE_OPTS KAFKA_GC_LOG_OPTS KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS \
KAFKA_TOOLS_LOG4J_LOGLEVEL KAFKA_JMX_HOSTNAME "

password=$(cat "$SECRETS/keystore.password")
export KAFKA_SSL_KEYSTORE_PASSWORD="$password" KAFKA_SSL_KEY_PASSWORD="$password"

# The healthcheck's client: this node's own certificate on the mutual-TLS listener.
(umask 077 && cat > "${PROBE:-/tmp/probe.properties}" <<PROPERTIES
security.protocol=SSL
ssl.truststore.type=PEM
ssl.truststore.location=$SECRETS/ca.pem
ssl.keystore.type=PKCS12
ssl.keystore.location=$KAFKA_SSL_KEYSTORE_LOCATION
ssl.keystore.password=$password
PROPERTIES
)

render() {
  local name key
  while IFS= read -r name; do
    [[ $name == KAFKA_* && $not_properties != *" $name "* ]] || continue
    key=${name#KAFKA_}
    key=${key,,}
    key=${key//_/.}
    key=${key//.../-}
    key=${key//../_}
    printf '%s=%s\n' "$key" "${!name}"
  done < <(compgen -e | sort)
}

data=${KAFKA_LOG_DIRS:-/var/lib/kafka/data}
if [[ ! -e "$data/meta.properties" ]]; then
  render > "$RENDERED"
  scram=() users=()
  while IFS= read -r name; do
    user=${name#SCRAM_PASSWORD_}
    user=${user,,}
    user=${user//_/-}
    users+=("$user")
    scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=${!name}]")
  done < <(compgen -e | grep '^SCRAM_PASSWORD_' | sort)
  echo "smsrx: formatting $data with the SCRAM users: ${users[*]}"
  "$STORAGE_TOOL" format --ignore-formatted --cluster-id "$CLUSTER_ID" -c "$RENDERED" "${scram[@]}"
  rm -f "$RENDERED"
fi
unset "${!SCRAM_PASSWORD_@}"
exec "$IMAGE_RUN"
