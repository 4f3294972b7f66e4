Feature: Cookie affinity
  With the affinity annotation, the first response sets a cookie naming one endpoint and
  requests that send it back stay on that endpoint.

  Scenario Outline: Requests carrying the affinity cookie stay on one pod
    Given a new random namespace
    Given a backend service "sticky" with 4 ready pods
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: sticky
      annotations:
        <prefix>/affinity: cookie
        <prefix>/session-cookie-name: <cookie>
    spec:
      rules:
        - host: sticky.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: sticky, port: {number: 8080}}}}
    """
    When I send 20 requests to "http://sticky.example.com/" keeping cookies
    Then all the responses status-code must be 200
    And the first response must set the cookie "<cookie>"
    And all the responses must come from the same pod
    When I send 40 requests to "http://sticky.example.com/"
    Then the responses must come from 4 different pods

    Examples:
      | prefix                      | cookie   |
      | portico.dev                 | STICKY   |
      | nginx.ingress.kubernetes.io | ROUTEID  |
