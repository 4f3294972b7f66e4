Feature: TLS by SNI
  spec.tls hosts are served with the certificate of their kubernetes.io/tls Secret
  (made as `kubectl create secret tls` makes it), chosen by the SNI name.

  Background:
    Given a new random namespace
    Given a self-signed TLS secret named "a-tls" for the "a.tls.test" hostname
    Given a self-signed TLS secret named "b-tls" for the "b.tls.test" hostname
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: tls
    spec:
      tls:
        - hosts: [a.tls.test]
          secretName: a-tls
        - hosts: [b.tls.test]
          secretName: b-tls
      rules:
        - host: a.tls.test
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 8080}}}}
        - host: b.tls.test
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: svc-b, port: {number: 8080}}}}
    """
    Then The Ingress status shows the IP address or FQDN where it is exposed

  Scenario Outline: Each host is served with its own certificate
    When I send a "GET" request to "https://<host>/secure"
    Then the secure connection must verify the "<host>" hostname
    And the request must be answered by "<backend>"
    And the request host must be "<host>"
    And the request path must be "/secure"

    Examples:
      | host       | backend |
      | a.tls.test | svc-a   |
      | b.tls.test | svc-b   |

  Scenario: Plain HTTP to a TLS host is redirected to HTTPS and served there
    When I send a "GET" request to "http://a.tls.test/plain?q=1"
    Then the request must be answered by "svc-a"
    And the request path must be "/plain"
    And the request headers must contain <key> with matching <value>
      | key               | value |
      | X-Forwarded-Proto | https |
