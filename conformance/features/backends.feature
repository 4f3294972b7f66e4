Feature: Backends and endpoints
  Portico sends requests to the ready pod endpoints of the Service the Ingress names.

  Background:
    Given a new random namespace

  Scenario: Requests are spread over every ready endpoint
    Given a backend service "spread" with 3 ready pods
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: spread
    spec:
      rules:
        - host: spread.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: spread, port: {number: 8080}}}}
    """
    When I send 30 requests to "http://spread.example.com/"
    Then all the responses status-code must be 200
    And the responses must come from 3 different pods

  Scenario: A not-ready endpoint gets no requests
    Given a backend service "half" with 2 ready pods and 2 not-ready pods
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: half
    spec:
      rules:
        - host: half.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: half, port: {number: 8080}}}}
    """
    When I send 30 requests to "http://half.example.com/"
    Then all the responses status-code must be 200
    And no response must come from a not-ready pod
    And the responses must come from 2 different pods

  Scenario: A backend with no ready endpoint answers 503
    Given a backend service "none-ready" with 0 ready pods and 2 not-ready pods
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: none-ready
    spec:
      rules:
        - host: none-ready.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: none-ready, port: {number: 8080}}}}
    """
    When I send a "GET" request to "http://none-ready.example.com/"
    Then the request must be answered by "503"

  Scenario: A Service port referenced by name
    Given a backend service "named" with port 80 named "web" and 1 ready pods
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: named
    spec:
      rules:
        - host: named.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: named, port: {name: web}}}}
    """
    When I send a "GET" request to "http://named.example.com/x"
    Then the request must be answered by "named"

  Scenario: A selector-less Service with hand-written Endpoints
    Given a selector-less service "external-service" with 2 hand-written endpoints
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: external
    spec:
      rules:
        - host: external.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: external-service, port: {number: 80}}}}
    """
    When I send 20 requests to "http://external.example.com/"
    Then all the responses status-code must be 200
    And the responses must come from 2 different pods
