Feature: IngressClass selection
  An Ingress is Portico's if its ingressClassName names a class whose controller is
  portico.dev/ingress-controller, or its legacy kubernetes.io/ingress.class annotation is
  "portico", or it names no class and Portico's class is the default.

  Background:
    Given a new random namespace
    Given an IngressClass "other" for the controller "example.com/other-controller"

  Scenario: An Ingress naming our class is served
    Given the IngressClass "portico" is not the default class
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: ours
    spec:
      ingressClassName: portico
      rules:
        - host: ours.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: ours, port: {number: 8080}}}}
    """
    Then The Ingress status shows the IP address or FQDN where it is exposed
    When I send a "GET" request to "http://ours.example.com/"
    Then the request must be answered by "ours"

  Scenario: An Ingress naming another controller's class is left alone
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: theirs
    spec:
      ingressClassName: other
      rules:
        - host: theirs.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: theirs, port: {number: 8080}}}}
    """
    Then The Ingress status should not contain the IP address or FQDN
    When I send a "GET" request to "http://theirs.example.com/"
    Then the request must be answered by "404"

  Scenario: An Ingress naming no class is ours when our class is the default
    Given the IngressClass "portico" is the default class
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: classless
    spec:
      rules:
        - host: classless.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: classless, port: {number: 8080}}}}
    """
    Then The Ingress status shows the IP address or FQDN where it is exposed
    When I send a "GET" request to "http://classless.example.com/"
    Then the request must be answered by "classless"

  Scenario: An Ingress naming no class is not ours when our class is not the default
    Given the IngressClass "portico" is not the default class
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: classless
    spec:
      rules:
        - host: classless.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: classless, port: {number: 8080}}}}
    """
    Then The Ingress status should not contain the IP address or FQDN
    When I send a "GET" request to "http://classless.example.com/"
    Then the request must be answered by "404"

  Scenario: The legacy kubernetes.io/ingress.class annotation selects Portico
    Given the IngressClass "portico" is not the default class
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: legacy
      annotations:
        kubernetes.io/ingress.class: portico
    spec:
      rules:
        - host: legacy.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: legacy, port: {number: 8080}}}}
    """
    Then The Ingress status shows the IP address or FQDN where it is exposed
    When I send a "GET" request to "http://legacy.example.com/"
    Then the request must be answered by "legacy"

  Scenario: The legacy annotation naming another class is not ours
    Given an Ingress resource
    """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: legacy-other
      annotations:
        kubernetes.io/ingress.class: nginx
    spec:
      rules:
        - host: legacy-other.example.com
          http:
            paths:
              - {path: /, pathType: Prefix, backend: {service: {name: legacy-other, port: {number: 8080}}}}
    """
    Then The Ingress status should not contain the IP address or FQDN
    When I send a "GET" request to "http://legacy-other.example.com/"
    Then the request must be answered by "404"
