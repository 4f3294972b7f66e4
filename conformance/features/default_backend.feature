Feature: Default backend
  An Ingress's defaultBackend catches what no rule matched; with none, Portico answers 404.

  Scenario: Requests no rule matches go to the default backend
    Given a new random namespace
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: with-default
    spec:
      defaultBackend:
        service: {name: fallback, port: {number: 8080}}
      rules:
        - host: app.example.com
          http:
            paths:
              - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
    """
    When I send a "GET" request to "http://app.example.com/api/v1"
    Then the request must be answered by "api"
    When I send a "POST" request to "http://app.example.com/web"
    Then the request must be answered by "fallback"
    And the request method must be "POST"
    And the request path must be "/web"
    When I send a "GET" request to "http://other.example.com/"
    Then the request must be answered by "fallback"

  Scenario: Without a default backend an unmatched request gets 404
    Given a new random namespace
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: no-default
    spec:
      rules:
        - host: app.example.com
          http:
            paths:
              - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
    """
    When I send a "GET" request to "http://app.example.com/web"
    Then the request must be answered by "404"
    When I send a "GET" request to "http://app.example.com/api"
    Then the request must be answered by "api"
