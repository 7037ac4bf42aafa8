#!/usr/bin/env bash
# One-shot (docker-compose service kafka-certs): a private CA for the Kafka cluster and one
# certificate per broker, made once and kept in named volumes. Safe to run again: what
# exists is left alone, a broker added to KAFKA_BROKERS gets its certificate.
#
#   $CA_KEY_DIR  the CA's key (volume kafka-ca-key): this job only
#   $BROKER_DIR  each broker's PKCS#12 keystore, its password and ca.pem (volume
#                kafka-tls): mounted by the brokers at /etc/kafka/secrets
#   $CA_DIR      ca.pem alone (volume kafka-ca): mounted by every client, which verifies
#                the brokers with it (SMSRX_KAFKA_CA_FILE)
#
# A broker's certificate names it (kafka-1), localhost and 127.0.0.1, for the services,
# the other brokers and tools on the Docker host; its subject CN=kafka-1 is also its
# principal on the mutual-TLS listeners (super.users). Needs keytool (the Kafka image's
# Java). ops/tls/README.md says how to use certificates of your own instead.
set -euo pipefail

CA_KEY_DIR=${CA_KEY_DIR:-/certs/ca-key}
BROKER_DIR=${BROKER_DIR:-/certs/broker}
CA_DIR=${CA_DIR:-/certs/ca}
BROKERS=${KAFKA_BROKERS:-kafka-1 kafka-2 kafka-3}
DAYS=${KAFKA_CERT_DAYS:-3650}
BROKER_UID=${BROKER_UID:-1000}  # appuser in the apache/kafka image
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

umask 077
if [[ ! -s $CA_KEY_DIR/ca.p12 ]]; then
  random > "$CA_KEY_DIR/ca.password"
  keytool -genkeypair -alias ca -dname "CN=smsrx Kafka CA" -keyalg EC -groupname secp256r1 \
    -validity "$DAYS" -ext bc:c -ext KeyUsage:critical=keyCertSign,cRLSign \
    -keystore "$CA_KEY_DIR/ca.p12" -storetype PKCS12 -storepass:file "$CA_KEY_DIR/ca.password"
  keytool -exportcert -rfc -alias ca -keystore "$CA_KEY_DIR/ca.p12" \
    -storepass:file "$CA_KEY_DIR/ca.password" -file "$CA_KEY_DIR/ca.pem"
  echo "kafka-certs: made a CA, valid $DAYS days"
fi
[[ -s $BROKER_DIR/keystore.password ]] || random > "$BROKER_DIR/keystore.password"

for broker in $BROKERS; do
  keystore=$BROKER_DIR/$broker.p12
  [[ -s $keystore ]] && continue
  keytool -genkeypair -alias "$broker" -dname "CN=$broker" -keyalg EC -groupname secp256r1 \
    -validity "$DAYS" -keystore "$keystore" -storetype PKCS12 \
    -storepass:file "$BROKER_DIR/keystore.password"
  keytool -certreq -alias "$broker" -keystore "$keystore" \
    -storepass:file "$BROKER_DIR/keystore.password" -file "$work/$broker.csr"
  keytool -gencert -alias ca -keystore "$CA_KEY_DIR/ca.p12" \
    -storepass:file "$CA_KEY_DIR/ca.password" -infile "$work/$broker.csr" \
    -outfile "$work/$broker.pem" -rfc -validity "$DAYS" \
    -ext "SAN=dns:$broker,dns:localhost,ip:127.0.0.1" \
    -ext KeyUsage:critical=digitalSignature -ext ExtendedKeyUsage=serverAuth,clientAuth
  # The CA as a trusted entry lets keytool install the signed chain, then it goes again.
  keytool -importcert -noprompt -alias ca -file "$CA_KEY_DIR/ca.pem" -keystore "$keystore" \
    -storepass:file "$BROKER_DIR/keystore.password"
  keytool -importcert -noprompt -alias "$broker" -file "$work/$broker.pem" \
    -keystore "$keystore" -storepass:file "$BROKER_DIR/keystore.password"
  keytool -delete -alias ca -keystore "$keystore" -storepass:file "$BROKER_DIR/keystore.password"
  echo "kafka-certs: issued $broker's certificate, valid $DAYS days"
done

cp "$CA_KEY_DIR/ca.pem" "$BROKER_DIR/ca.pem"
cp "$CA_KEY_DIR/ca.pem" "$CA_DIR/ca.pem"
chmod 644 "$CA_DIR/ca.pem" "$BROKER_DIR/ca.pem"
chmod 600 "$BROKER_DIR"/*.p12 "$BROKER_DIR/keystore.password"
if [[ $(id -u) == 0 ]]; then
  chown -R "$BROKER_UID" "$BROKER_DIR"
fi
